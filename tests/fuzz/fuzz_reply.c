/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libFuzzer target: what a client decodes from the network (libkeymap's side): a reply
 * datagram (km_reply_parse) and a MAP chunk (its entries, then a map built from them as
 * km_map_refresh does, and a key routed on it). Nothing may crash, read out of bounds or
 * build an inconsistent map.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <km_proto.h>
#include <km_shardmap.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t ids[4096];
	uint16_t owners[4096];
	struct km_shardmap *m = NULL;
	struct km_map_chunk c;
	struct km_map_entry e;
	struct km_msg msg;
	uint32_t i, n;

	if (km_reply_parse(data, size, &msg) == 0 && msg.hdr.val_len <= size)
		(void)km_status_name(msg.hdr.status);
	/* The value of a MAP reply, or the input itself. */
	if (km_shardmap_decode_chunk(data, size, &c) != 0)
		return 0;
	n = c.count < 4096 ? c.count : 4096;
	for (i = 0; i < n; i++) {
		km_shardmap_chunk_entry(&c, i, &e);
		ids[i] = e.id;
		owners[i] = e.owner;
	}
	if (c.nb_workers != 0 && km_shardmap_from_list(c.epoch, c.nb_workers, c.udp_port_base,
					 c.route_sep, c.route_depth, ids, owners, n, &m) == 0) {
		/* A map that was accepted routes every key to one of its shards. */
		struct km_shardmap_route rt;

		if (km_shardmap_route(m, data, size < 64 ? size : 64, &rt) != 0)
			abort();
		km_shardmap_free(m);
	}
	return 0;
}
