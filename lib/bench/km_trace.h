/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_TRACE_H
#define KM_TRACE_H

/**
 * @file
 * Access traces in keymap's replay CSV (docs/trace-format.md):
 *
 *     timestamp_us,op,key,value_size[,session]
 *
 * - an optional first line that starts with "timestamp_us" is a header;
 * - empty lines and lines starting with '#' are skipped;
 * - fields are separated by single commas, without blanks around them; numbers are plain
 *   decimal digits (no sign, no blanks; leading zeros are fine);
 * - timestamp_us: decimal microseconds since the trace start, non-decreasing;
 * - op: GET, PUT or DEL (upper case);
 * - key: 1..250 bytes, no comma, no control characters;
 * - value_size: decimal, 0..value_max given to the loader (PUT: bytes to write; GET/DEL:
 *   the size the key is preloaded with if this is its first appearance);
 * - session: optional decimal 0..2^32-1 (0: none).
 * Lines end with "\n" or "\r\n"; the last line may lack its newline.
 *
 * Keys are interned: each distinct key gets an id 0..nb_keys-1 in order of first
 * appearance, so simulators and the replayer index arrays by id.
 */

#include <stddef.h>
#include <stdint.h>

struct km_trace_rec {
	uint64_t ts_us;
	uint32_t key_id;
	uint32_t value_size;
	uint32_t session;
	uint8_t op; /* enum km_wl_opcode: KM_WL_GET, KM_WL_PUT, KM_WL_DEL */
};

struct km_trace_key {
	const char *key; /* not NUL-terminated inside the arena; len bytes */
	uint16_t len;
	uint32_t first_value_size; /* value_size of the key's first record */
};

struct km_trace {
	struct km_trace_rec *recs;
	size_t nb_recs;
	struct km_trace_key *keys;
	size_t nb_keys;
	/* private: storage of the key bytes */
	char *arena;
	size_t arena_len, arena_cap;
};

/** One parsed line; key points into the line. */
struct km_trace_line {
	uint64_t ts_us;
	uint8_t op;
	const char *key;
	size_t klen;
	uint32_t value_size;
	uint32_t session;
};

/**
 * Parse one line (without its line ending). The header line is the loader's business:
 * here it is a bad timestamp.
 * @return 1 for a record, 0 for a line to skip (empty, comment), -EINVAL with the
 *   reason in err (e.g. "op 'GETX' is not GET, PUT or DEL", "value_size 2000 exceeds
 *   1431").
 * @note Context: any thread.
 */
int km_trace_parse_line(const char *line, size_t len, uint32_t value_max, struct km_trace_line *out,
	char *err, size_t errlen);

/**
 * Load a whole trace file. A header line is accepted only as the first line.
 * @return 0 and *out (an empty file gives a trace of 0 records); -ENOENT etc. (open or
 *   read failure, "<path>: <reason>" in err) or -EINVAL (bad line, or timestamps going
 *   backwards) with "<path>:<line>: <reason>" in err (lines count from 1, skipped lines
 *   included); -ENOMEM. On failure *out is left alone.
 * @note Context: any thread; the loaded trace is read-only afterwards and may be shared.
 */
int km_trace_load(
	const char *path, uint32_t value_max, struct km_trace **out, char *err, size_t errlen);

/** Free a loaded trace; NULL is fine. @note Context: any thread, once nobody reads t. */
void km_trace_free(struct km_trace *t);

#endif /* KM_TRACE_H */
