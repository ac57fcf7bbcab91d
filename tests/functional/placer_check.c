/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * placer_check FILE: decode the cluster map in FILE (the JSON form of lib/cluster) and
 * print it in lines a shell test can read:
 *   epoch E
 *   node ID STATE up|down SHARDS      (one per node, in table order)
 *   shard ID NODE WORKER              (one per shard, by id)
 * Exit 1 with the decoder's reason when FILE does not hold a valid map, 2 on bad usage.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <km_cluster.h>

int
main(int argc, char **argv)
{
	char err[KM_CLUSTER_ERR_MAX], *buf;
	struct km_cmap *m = NULL;
	uint32_t i, k, n;
	size_t len = 0, cap = 1 << 16, got;
	FILE *f;
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: placer_check FILE\n");
		return 2;
	}
	f = fopen(argv[1], "rb");
	if (f == NULL) {
		perror(argv[1]);
		return 2;
	}
	buf = malloc(cap);
	while (buf != NULL && (got = fread(buf + len, 1, cap - len, f)) > 0) {
		len += got;
		if (len == cap) {
			char *b = realloc(buf, cap * 2);

			if (b == NULL) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = b;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf == NULL) {
		fprintf(stderr, "placer_check: out of memory\n");
		return 2;
	}
	/* etcdctl adds a newline after the value */
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	rc = km_cmap_decode(buf, len, &m, err, sizeof(err));
	free(buf);
	if (rc != 0) {
		fprintf(stderr, "placer_check: %s: not a valid map: %s\n", argv[1], err);
		return 1;
	}
	printf("epoch %" PRIu32 "\n", m->epoch);
	for (i = 0; i < m->nb_nodes; i++) {
		for (k = 0, n = 0; k < m->nb_shards; k++)
			n += m->shards[k].node == i;
		printf("node %s %s %s %" PRIu32 "\n", m->nodes[i].id,
			m->nodes[i].state == KM_CMAP_DRAINING ? "draining" : "active",
			m->nodes[i].down ? "down" : "up", n);
	}
	for (k = 0; k < m->nb_shards; k++) {
		const struct km_cmap_shard *s = &m->shards[k];
		unsigned int r;

		printf("shard %" PRIu64 " %s %u", s->id, m->nodes[s->node].id, s->worker);
		/* Its replicas: node:worker:in_sync. */
		for (r = 0; r < s->nb_replicas; r++)
			printf(" %s:%u:%u", m->nodes[s->replicas[r].node].id, s->replicas[r].worker,
				s->replicas[r].in_sync);
		printf("\n");
	}
	km_cmap_free(m);
	return 0;
}
