/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_CONFIG_PRIV_H
#define KEYMAPD_CONFIG_PRIV_H

/*
 * The table of tunables (config_table.c) and what it is made of, shared with the parser
 * (config.c). Not for the rest of keymapd: it uses config.h.
 */

#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum conf_type {
	T_U64,    /* decimal, within [min, max] */
	T_STR,    /* up to size - 1 bytes */
	T_IPV4,   /* dotted quad */
	T_CHAR,   /* exactly one byte */
	T_ENUM,   /* one of the '|'-separated words in `choices` */
	T_CIDRS,  /* IPv4 CIDR list, checked by km_allow_parse(), kept as text */
	T_MODELS, /* predictor models, checked by km_predict_models_parse(), kept as text */
};

#define F_RUNTIME 0x1 /* may change while keymapd runs (keymapctl set) */
#define F_POW2    0x2 /* T_U64: a power of two */
#define F_AUTO    0x4 /* T_U64: may also be "auto" (KM_CONF_AUTO: keymapd derives it) */

struct conf_desc {
	const char *section;
	const char *key;
	enum conf_type type;
	unsigned int flags; /* F_* */
	size_t off;
	size_t size;
	uint64_t min, max;
	const char *choices;
	const char *def;
	const char *help;
};

/* Every tunable, in file order (config_table.c). */
extern const struct conf_desc km_conf_descs[];
extern const size_t km_conf_nb_descs;

#endif /* KEYMAPD_CONFIG_PRIV_H */
