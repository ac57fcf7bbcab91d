/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapd end to end: keymapd on net_tap in a private namespace, driven through libkeymap
 * (random operations checked against a reference map), malformed datagrams and frames
 * (after which correct requests still succeed), and a two-worker run that exercises the
 * hand-off of misdirected requests. Usage: test_keymapd PATH_TO_KEYMAPD
 */

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <km_client.h>
#include <km_proto.h>

#include "km_testenv.h"

#define NB_KEYS    400
#define NB_OPS     10000
#define VAL_MAX    300
#define REPLY_WAIT 300 /* ms to wait for a reply that should (or should not) come */

static const char *keymapd_path;

/* Reference model of the store: what every key must hold. */
struct ref_entry {
	int present;
	uint64_t version;
	size_t len;
	uint8_t val[VAL_MAX];
};

struct fixture {
	struct km_testenv env;
	struct km_client *c;
	unsigned int workers;
};

/* Record an acknowledged write in the reference. */
static void
ref_set(struct ref_entry *r, uint64_t version, const uint8_t *val, size_t len)
{
	r->present = 1;
	r->version = version;
	r->len = len;
	memcpy(r->val, val, len);
}

static uint64_t rng_state;

static uint64_t
rnd(void)
{
	/* xorshift64*: deterministic for a given seed. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static int
open_client(struct km_client **c, int no_steer)
{
	struct km_client_opts o = {
		.host = KM_TEST_SERVER_IP,
		.port = KM_TEST_PORT,
		.timeout_ms = 200,
		.retries = 5,
		.no_steer = no_steer,
	};

	return km_client_open(&o, c);
}

static int
setup_env(void **state, const char *lcores, unsigned int workers)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int i;

	if (f == NULL)
		return -1;
	f->workers = workers;
	if (km_testenv_start(&f->env, keymapd_path, lcores, NULL) != 0) {
		free(f);
		return -1;
	}
	/* The tap link may take a moment to pass traffic: ping until answered (bounded). */
	for (i = 0; i < 50; i++) {
		if (f->c == NULL && open_client(&f->c, 0) != 0)
			continue;
		if (km_ping(f->c, 0) == KM_OK)
			break;
		/* Re-open so that the map is fetched once the link is up. */
		km_client_close(f->c);
		f->c = NULL;
	}
	if (f->c == NULL || km_ping(f->c, 0) != KM_OK) {
		fprintf(stderr, "keymapd does not answer PING\n");
		km_testenv_dump_log(&f->env);
		km_testenv_stop(&f->env);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
setup_one_worker(void **state)
{
	return setup_env(state, "-l0-1", 1);
}

static int
setup_two_workers(void **state)
{
	/* Control and worker 0 share CPU 0, worker 1 has CPU 1: timings mean nothing. */
	return setup_env(state, "--lcores=0@0,1@0,2@1", 2);
}

static void
key_of(unsigned int i, char *buf, size_t cap)
{
	/* Composite keys: ten entries per entity share a routing part. */
	snprintf(buf, cap, "user%u/item%u", i / 10, i % 10);
}

/* Random GET/PUT/CAS/DEL/MGET through libkeymap, each result checked against ref. */
static void
random_ops(struct km_client *c, struct ref_entry *ref, unsigned int nb_ops, uint64_t seed)
{
	uint8_t val[VAL_MAX], buf[VAL_MAX];
	char key[64];
	unsigned int n;

	rng_state = seed;
	for (n = 0; n < nb_ops; n++) {
		unsigned int i = (unsigned int)(rnd() % NB_KEYS), op = (unsigned int)(rnd() % 100);
		struct ref_entry *r = &ref[i];
		uint64_t ver = 0;
		size_t len = 0, j;
		int rc;

		key_of(i, key, sizeof(key));
		if (op < 40) {
			rc = km_get(c, key, strlen(key), buf, sizeof(buf), &len, &ver);
			if (r->present) {
				assert_int_equal(rc, KM_OK);
				assert_int_equal(len, r->len);
				assert_memory_equal(buf, r->val, len);
				assert_int_equal(ver, r->version);
			} else {
				assert_int_equal(rc, KM_ERR_NOT_FOUND);
			}
		} else if (op < 75) {
			len = (size_t)(rnd() % VAL_MAX);
			for (j = 0; j < len; j++)
				val[j] = (uint8_t)rnd();
			rc = km_put(c, key, strlen(key), val, len, &ver);
			assert_int_equal(rc, KM_OK);
			assert_true(ver > r->version);
			ref_set(r, ver, val, len);
		} else if (op < 85) {
			/* Half the CAS calls use the right version, half a wrong one. */
			uint64_t expect = (rnd() & 1) ? r->version : r->version + 7;

			len = 1 + (size_t)(rnd() % 16);
			memset(val, 'c', len);
			rc = km_cas(c, key, strlen(key), val, len, expect, &ver);
			if ((r->present && expect == r->version) || (!r->present && expect == 0)) {
				assert_int_equal(rc, KM_OK);
				assert_true(ver > r->version);
				ref_set(r, ver, val, len);
			} else {
				assert_int_equal(rc, KM_ERR_VERSION_MISMATCH);
				assert_int_equal(ver, r->present ? r->version : 0);
			}
		} else if (op < 95) {
			rc = km_del(c, key, strlen(key), 0);
			assert_int_equal(rc, r->present ? KM_OK : KM_ERR_NOT_FOUND);
			/* The version stays: a re-created key must get a higher one. */
			r->present = 0;
		} else {
			struct km_mget_item it[8];
			char keys[8][64];
			uint8_t bufs[8][VAL_MAX];
			unsigned int k, idx[8];

			for (k = 0; k < 8; k++) {
				idx[k] = (unsigned int)(rnd() % NB_KEYS);
				key_of(idx[k], keys[k], sizeof(keys[k]));
				it[k] = (struct km_mget_item){
					.key = keys[k],
					.klen = strlen(keys[k]),
					.buf = bufs[k],
					.cap = sizeof(bufs[k]),
				};
			}
			assert_int_equal(km_mget(c, it, 8), KM_OK);
			for (k = 0; k < 8; k++) {
				struct ref_entry *q = &ref[idx[k]];

				if (!q->present) {
					assert_int_equal(it[k].err, KM_ERR_NOT_FOUND);
					continue;
				}
				assert_int_equal(it[k].err, KM_OK);
				assert_int_equal(it[k].len, q->len);
				assert_memory_equal(bufs[k], q->val, q->len);
				assert_int_equal(it[k].version, q->version);
			}
		}
	}
}

static void
test_random_ops(void **state)
{
	struct fixture *f = *state;
	struct ref_entry *ref = calloc(NB_KEYS, sizeof(*ref));

	assert_non_null(ref);
	random_ops(f->c, ref, NB_OPS, 0x6b65796d6170ULL);
	free(ref);
}

/* Send one datagram to keymapd; returns the reply status, or -1 if none came. */
static int
send_raw(int fd, const void *buf, size_t len, uint16_t port)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	uint8_t reply[2048];
	struct km_msg msg;
	ssize_t n;

	inet_pton(AF_INET, KM_TEST_SERVER_IP, &to.sin_addr);
	assert_int_equal(sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)len);
	if (poll(&pfd, 1, REPLY_WAIT) != 1)
		return -1;
	n = recv(fd, reply, sizeof(reply), 0);
	assert_true(n > 0);
	assert_int_equal(km_reply_parse(reply, (size_t)n, &msg), 0);
	return msg.hdr.status;
}

static size_t
mk_req(uint8_t *buf, uint8_t op, uint16_t klen, uint32_t vlen)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = op,
		.key_len = klen,
		.val_len = vlen,
		.req_id = 42,
	};

	memset(buf + KM_HDR_LEN, 'k', (size_t)klen + vlen);
	km_hdr_encode(buf, &h);
	return KM_HDR_LEN + (size_t)klen + vlen;
}

/* Raw Ethernet frame to keymapd through the kernel side of the tap. */
static void
send_frame(int fd, int ifindex, const void *frame, size_t len)
{
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_ifindex = ifindex,
		.sll_halen = 6,
		.sll_addr = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	};

	assert_int_equal(
		sendto(fd, frame, len, 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)len);
}

static size_t
mk_ipv4(uint8_t *fr, uint8_t proto, size_t l4_len)
{
	uint8_t *ip = fr + 14;
	uint32_t sum = 0;
	size_t i;

	memset(fr, 0xff, 6);
	memset(fr + 6, 0x02, 6);
	fr[12] = 0x08;
	fr[13] = 0x00;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	ip[2] = (uint8_t)((20 + l4_len) >> 8);
	ip[3] = (uint8_t)(20 + l4_len);
	ip[8] = 64;
	ip[9] = proto;
	inet_pton(AF_INET, KM_TEST_CLIENT_IP, ip + 12);
	inet_pton(AF_INET, KM_TEST_SERVER_IP, ip + 16);
	for (i = 0; i < 20; i += 2)
		sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	ip[10] = (uint8_t)(~sum >> 8);
	ip[11] = (uint8_t)~sum;
	return 14 + 20 + l4_len;
}

static void
test_malformed(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[2048], fr[1600];
	int fd = socket(AF_INET, SOCK_DGRAM, 0), pfd, ifindex;
	size_t len;
	char key[64];
	uint8_t val[VAL_MAX];
	size_t vlen;
	uint64_t ver;

	assert_true(fd >= 0);
	/* Dropped silently: too short, wrong magic, wrong version, a reply. */
	assert_int_equal(send_raw(fd, buf, 0, KM_TEST_PORT), -1);
	len = mk_req(buf, KM_OP_GET, 3, 0);
	assert_int_equal(send_raw(fd, buf, 20, KM_TEST_PORT), -1);
	buf[0] = 'X';
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), -1);
	len = mk_req(buf, KM_OP_GET, 3, 0);
	buf[1] = 9;
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), -1);
	len = mk_req(buf, KM_OP_GET, 3, 0);
	buf[4] = KM_F_REPLY;
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), -1);
	/* Answered BAD_REQUEST: lengths that disagree with the datagram, empty key,
	 * unknown and reserved ops, a GET with a value. */
	len = mk_req(buf, KM_OP_GET, 3, 0);
	assert_int_equal(send_raw(fd, buf, len - 1, KM_TEST_PORT), KM_ST_BAD_REQUEST);
	assert_int_equal(send_raw(fd, buf, len + 5, KM_TEST_PORT), KM_ST_BAD_REQUEST);
	len = mk_req(buf, KM_OP_PUT, 0, 4);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), KM_ST_BAD_REQUEST);
	len = mk_req(buf, 0x63, 3, 0);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), KM_ST_BAD_REQUEST);
	len = mk_req(buf, KM_OP_SCAN, 3, 0);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), KM_ST_BAD_REQUEST);
	len = mk_req(buf, KM_OP_GET, 3, 4);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), KM_ST_BAD_REQUEST);
	/* Answered TOO_LARGE: a 251-byte key, a value over [store] value_max (1024). */
	len = mk_req(buf, KM_OP_GET, 251, 0);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), KM_ST_TOO_LARGE);
	len = mk_req(buf, KM_OP_PUT, 4, 1100);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT), KM_ST_TOO_LARGE);
	/* A port no worker listens on: dropped. */
	len = mk_req(buf, KM_OP_PING, 0, 0);
	assert_int_equal(send_raw(fd, buf, len, KM_TEST_PORT + 100), -1);
	close(fd);

	/* Frames the kernel's UDP socket would never send, through a packet socket. */
	pfd = socket(AF_PACKET, SOCK_RAW, 0);
	assert_true(pfd >= 0);
	ifindex = (int)if_nametoindex(KM_TEST_TAP);
	assert_true(ifindex > 0);
	memset(fr, 0, sizeof(fr));
	memset(fr, 0xff, 6);
	fr[12] = 0x86; /* IPv6 ethertype, garbage payload */
	fr[13] = 0xdd;
	send_frame(pfd, ifindex, fr, 60);
	fr[12] = 0x12; /* unknown ethertype */
	fr[13] = 0x34;
	send_frame(pfd, ifindex, fr, 60);
	len = mk_ipv4(fr, IPPROTO_UDP, 8); /* truncated: IP says more than the frame has */
	send_frame(pfd, ifindex, fr, 14 + 10);
	len = mk_ipv4(fr, IPPROTO_UDP, 8 + 40);
	fr[14 + 10] ^= 0x55; /* bad header checksum */
	send_frame(pfd, ifindex, fr, len);
	len = mk_ipv4(fr, IPPROTO_UDP, 8 + 40);
	fr[14] = 0x46; /* IP options */
	send_frame(pfd, ifindex, fr, len);
	len = mk_ipv4(fr, IPPROTO_TCP, 40); /* TCP to our address */
	send_frame(pfd, ifindex, fr, len);
	len = mk_ipv4(fr, IPPROTO_UDP, 4); /* UDP shorter than its header */
	send_frame(pfd, ifindex, fr, len < 60 ? 60 : len);
	len = mk_ipv4(fr, IPPROTO_UDP, 8 + 40); /* UDP length larger than the IP payload */
	fr[34 + 2] = KM_TEST_PORT >> 8;
	fr[34 + 3] = KM_TEST_PORT & 0xff;
	fr[34 + 4] = 0x05;
	fr[34 + 5] = 0x00;
	send_frame(pfd, ifindex, fr, len);
	close(pfd);

	/* The server keeps serving correct requests. */
	assert_int_equal(km_ping(f->c, 0), KM_OK);
	snprintf(key, sizeof(key), "after/malformed");
	assert_int_equal(km_put(f->c, key, strlen(key), "ok", 2, &ver), KM_OK);
	assert_int_equal(km_get(f->c, key, strlen(key), val, sizeof(val), &vlen, &ver), KM_OK);
	assert_int_equal(vlen, 2);
	assert_memory_equal(val, "ok", 2);
}

/* keymapd answers ICMP echo for its address (kernel tools such as ping must work). */
static void
test_icmp_echo(void **state)
{
	struct sockaddr_in to = {.sin_family = AF_INET};
	uint8_t req[64] = {8, 0, 0, 0, 0x12, 0x34, 0, 1}, rep[256];
	struct pollfd pfd;
	uint32_t sum = 0;
	int fd, got = 0, i;
	ssize_t n;

	(void)state;
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	assert_true(fd >= 0);
	memcpy(req + 8, "keymap-icmp-echo-payload", 24);
	for (i = 0; i < (int)sizeof(req); i += 2)
		sum += (uint32_t)(req[i] << 8 | req[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	req[2] = (uint8_t)(~sum >> 8);
	req[3] = (uint8_t)~sum;
	inet_pton(AF_INET, KM_TEST_SERVER_IP, &to.sin_addr);
	assert_int_equal(sendto(fd, req, sizeof(req), 0, (struct sockaddr *)&to, sizeof(to)),
		(ssize_t)sizeof(req));
	pfd = (struct pollfd){.fd = fd, .events = POLLIN};
	/* The raw socket sees every ICMP packet of the namespace: look for our reply. */
	for (i = 0; i < 10 && !got && poll(&pfd, 1, REPLY_WAIT) == 1; i++) {
		n = recv(fd, rep, sizeof(rep), 0);
		/* IPv4 header (20 bytes) then the echo reply: type 0, same id, seq, payload. */
		got = n == 20 + (ssize_t)sizeof(req) && rep[20] == 0 && rep[24] == 0x12 &&
		      rep[25] == 0x34 && memcmp(rep + 28, req + 8, sizeof(req) - 8) == 0;
	}
	close(fd);
	assert_true(got);
}

/* Runs last in its group: stops keymapd and checks what it counted. */
static void
test_counters_one_worker(void **state)
{
	struct fixture *f = *state;

	km_client_close(f->c);
	f->c = NULL;
	assert_int_equal(km_testenv_stop(&f->env), 0);
	assert_true(km_testenv_counter(&f->env, "req_get") > 0);
	assert_true(km_testenv_counter(&f->env, "arp_replies") >= 1);
	assert_true(km_testenv_counter(&f->env, "icmp_replies") >= 1);
	assert_true(km_testenv_counter(&f->env, "bad_request") >= 6);
	assert_true(km_testenv_counter(&f->env, "too_large") >= 2);
	assert_true(km_testenv_counter(&f->env, "drop_proto") >= 4);
	assert_true(km_testenv_counter(&f->env, "drop_l2") >= 2);
	assert_true(km_testenv_counter(&f->env, "drop_l3") >= 3);
	assert_true(km_testenv_counter(&f->env, "drop_l4") >= 3);
	assert_int_equal(km_testenv_counter(&f->env, "handoff_out"), 0);
}

static void
test_handoff(void **state)
{
	struct fixture *f = *state;
	struct ref_entry *ref = calloc(NB_KEYS, sizeof(*ref));
	struct km_client *unsteered;

	assert_non_null(ref);
	assert_int_equal(km_client_nb_workers(f->c), 2);
	assert_int_equal(km_ping(f->c, 1), KM_OK);
	/* A steered client and one that sends everything to worker 0's port share the
	 * reference: both must see the same data, wherever RSS puts their packets. */
	random_ops(f->c, ref, NB_OPS / 2, 0x1234);
	assert_int_equal(open_client(&unsteered, 1), KM_OK);
	random_ops(unsteered, ref, NB_OPS / 2, 0x5678);
	km_client_close(unsteered);
	free(ref);
}

static void
test_counters_two_workers(void **state)
{
	struct fixture *f = *state;
	long long out, in;

	km_client_close(f->c);
	f->c = NULL;
	assert_int_equal(km_testenv_stop(&f->env), 0);
	out = km_testenv_counter(&f->env, "handoff_out");
	in = km_testenv_counter(&f->env, "handoff_in");
	fprintf(stderr, "hand-offs: out %lld in %lld\n", out, in);
	assert_true(out > 0);
	assert_int_equal(out, in);
	assert_int_equal(km_testenv_counter(&f->env, "handoff_drops"), 0);
	/* Both workers served requests of their own shards. */
	assert_true(km_testenv_counter_worker(&f->env, "req_put", 0) > 0);
	assert_true(km_testenv_counter_worker(&f->env, "req_put", 1) > 0);
}

/* Group teardown after a test already stopped keymapd. */
static int
teardown_stopped(void **state)
{
	struct fixture *f = *state;

	km_client_close(f->c);
	km_testenv_stop(&f->env);
	free(f);
	return 0;
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest one[] = {
		cmocka_unit_test(test_random_ops),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_icmp_echo),
		cmocka_unit_test(test_counters_one_worker),
	};
	const struct CMUnitTest two[] = {
		cmocka_unit_test(test_handoff),
		cmocka_unit_test(test_counters_two_workers),
	};
	const char *why = km_testenv_unavailable();
	int failed;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH_TO_KEYMAPD\n", argv[0]);
		return 1;
	}
	if (why != NULL) {
		fprintf(stderr, "SKIP: %s\n", why);
		return KM_TEST_SKIP;
	}
	keymapd_path = argv[1];
	failed = cmocka_run_group_tests_name(
		"keymapd, one worker", one, setup_one_worker, teardown_stopped);
	failed += cmocka_run_group_tests_name(
		"keymapd, two workers", two, setup_two_workers, teardown_stopped);
	return failed;
}
