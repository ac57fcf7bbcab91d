/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Who gets what, on keymapd's side: the secrets of HELLO cookies (rotated by the control
 * lcore) and the table of client keys (loaded from [security] keys_file, published to the
 * workers under RCU, changed at run time by keymapctl key add/remove/reload).
 */

#define KM_LOG_COMP KM_LOG_DATAPATH /* keymapd.h */

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>

#include <urcu-qsbr.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"

struct km_hello_secrets km_hello;
struct km_auth *km_auth_current;

/* The workers' clock (km_proc_time()): the TSC in ns. */
static uint64_t
tsc_ns(void)
{
	return (uint64_t)((double)rte_rdtsc() * (1e9 / (double)rte_get_tsc_hz()));
}

/* Publish t (NULL: none) and free the table it replaces once no worker can hold it. */
static void
publish(struct km_auth *t)
{
	struct km_auth *old = km_auth_current;

	rcu_assign_pointer(km_auth_current, t);
	if (old != NULL) {
		synchronize_rcu();
		km_auth_free(old);
	}
}

/* The keys of path (or none), with the required flag. */
static int
load(const char *path, int required, struct km_auth **out, char *err, size_t errlen)
{
	struct km_auth *t = NULL;
	int rc;

	if (path[0] == '\0') {
		if (required) {
			snprintf(err, errlen,
				"[security] auth = 1 needs client keys: set [security] keys_file");
			return -EINVAL;
		}
		*out = NULL;
		return 0;
	}
	rc = km_auth_load(path, &t, err, errlen);
	if (rc < 0)
		return rc;
	t->required = (uint8_t)required;
	if (required && t->nb == 0)
		KM_LOG(WARNING, "[security] auth = 1 and %s holds no key: every request is DENIED",
			path);
	*out = t;
	return 0;
}

int
km_guard_init(const struct km_conf *c, char *err, size_t errlen)
{
	struct km_auth *t;
	int rc;

	if (c->cookies) {
		rc = km_hello_init(&km_hello, (uint32_t)(c->cookie_lifetime_s * 1000), tsc_ns());
		if (rc < 0) {
			snprintf(err, errlen, "cannot draw the cookie secrets: %s", strerror(-rc));
			return rc;
		}
	}
	rc = load(c->keys_file, (int)c->auth, &t, err, errlen);
	if (rc < 0)
		return rc;
	publish(t);
	if (t != NULL)
		KM_LOG(INFO, "client keys: %u from %s, MAC %s", t->nb, c->keys_file,
			t->required ? "required" : "checked where present");
	return 0;
}

void
km_guard_fini(void)
{
	km_auth_free(km_auth_current);
	km_auth_current = NULL;
}

void
km_guard_tick(void)
{
	if (km_ctl.conf.cookies)
		km_hello_rotate(&km_hello, tsc_ns());
}

int
km_guard_required(int required, char *err, size_t errlen)
{
	struct km_auth *t;
	int rc;

	if (required && km_auth_current == NULL) {
		snprintf(err, errlen,
			"security.auth=1 needs client keys: set [security] keys_file and restart");
		return -EINVAL;
	}
	if (km_auth_current == NULL)
		return 0;
	rc = km_auth_with(km_auth_current, NULL, 0, &t);
	if (rc < 0) {
		snprintf(err, errlen, "%s", strerror(-rc));
		return rc;
	}
	t->required = (uint8_t)required;
	publish(t);
	return 0;
}

/* The file keys live in, or an error. */
static const char *
keys_file(char *err, size_t errlen)
{
	if (km_ctl.conf.keys_file[0] == '\0') {
		snprintf(err, errlen,
			"no [security] keys_file is configured: set one and restart keymapd");
		return NULL;
	}
	return km_ctl.conf.keys_file;
}

/*
 * Make t the keys in force, written to the keys file first so that what serves is what a
 * restart reads. serve_anyway (a removal): if the file cannot be written, serve without
 * the key all the same (a compromised key must go now) and say what to fix.
 * @return 0, or -errno (nothing changed, unless serve_anyway).
 */
static int
commit(struct km_auth *t, int serve_anyway, char *err, size_t errlen)
{
	const char *path = keys_file(err, errlen);
	char why[600];
	int rc;

	if (path == NULL) {
		km_auth_free(t);
		return -EINVAL;
	}
	rc = km_auth_save(t, path, why, sizeof(why));
	if (rc == 1)
		KM_LOG(WARNING, "client keys: %s", why);
	if (rc < 0 && !serve_anyway) {
		snprintf(err, errlen, "%s", why);
		km_auth_free(t);
		return rc;
	}
	publish(t);
	if (rc < 0) {
		snprintf(err, errlen,
			"no longer served, but the keys file was not updated (%s): edit %s by "
			"hand, or it comes back at the next start or key reload",
			why, path);
		KM_LOG(ERR, "client keys: %s", err);
		return rc;
	}
	return 0;
}

int
km_guard_key_add(struct km_auth_key *k, char *err, size_t errlen)
{
	const struct km_auth *cur = km_auth_current;
	struct km_auth *t;
	int rc;

	if (keys_file(err, errlen) == NULL)
		return -EINVAL;
	if (k->id == 0) {
		/* The next free id. */
		k->id = 1;
		while (km_auth_find(cur, k->id) != NULL && k->id < UINT32_MAX)
			k->id++;
	}
	if (sodium_init() < 0) {
		snprintf(err, errlen, "no random source");
		return -EIO;
	}
	randombytes_buf(k->secret, sizeof(k->secret));
	rc = km_auth_with(cur, k, 0, &t);
	if (rc < 0) {
		snprintf(err, errlen, "%s",
			rc == -EEXIST   ? "that key id is taken (keymapctl keys lists them)"
			: rc == -ENOSPC ? "the key table is full"
					: strerror(-rc));
		return rc;
	}
	if (cur == NULL)
		t->required = (uint8_t)km_ctl.conf.auth;
	rc = commit(t, 0, err, errlen);
	if (rc == 0)
		KM_LOG(NOTICE, "client key %u added (%s)", k->id, k->write ? "rw" : "ro");
	return rc;
}

int
km_guard_key_remove(uint32_t id, char *err, size_t errlen)
{
	struct km_auth *t;
	int rc;

	if (keys_file(err, errlen) == NULL)
		return -EINVAL;
	rc = km_auth_with(km_auth_current, NULL, id, &t);
	if (rc < 0) {
		snprintf(err, errlen, "%s",
			rc == -ENOENT ? "no such key id (keymapctl keys lists them)"
				      : strerror(-rc));
		return rc;
	}
	rc = commit(t, 1, err, errlen);
	KM_LOG(NOTICE, "client key %u removed", id);
	return rc;
}

int
km_guard_keys_reload(char *err, size_t errlen)
{
	const char *path = keys_file(err, errlen);
	struct km_auth *t;
	int rc;

	if (path == NULL)
		return -EINVAL;
	rc = load(path, (int)km_ctl.conf.auth, &t, err, errlen);
	if (rc < 0)
		return rc;
	publish(t);
	KM_LOG(NOTICE, "client keys reloaded: %u from %s", t->nb, path);
	return 0;
}
