/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Elections through etcd's v3election service: campaign, leader, resign, proclaim.
 */

#include <errno.h>
#include <string.h>

#include "etcd_private.h"

/* {"name": name} into o. */
static int
name_json(json_t *o, const void *name, size_t nlen)
{
	if (nlen == 0 || name == NULL)
		return -EINVAL;
	if (nlen > KM_ETCD_NAME_MAX)
		return -ENAMETOOLONG;
	return etcd_json_bytes(o, "name", name, nlen);
}

/* The gateway's LeaderKey of l, as field "leader" of o. */
static int
leader_json(json_t *o, const struct km_etcd_leader *l)
{
	json_t *k = json_object();
	int rc;

	if (k == NULL || json_object_set_new(o, "leader", k) != 0)
		return -ENOMEM;
	if (l->klen == 0 || l->klen > sizeof(l->key))
		return -EINVAL;
	rc = name_json(k, l->name, l->nlen);
	if (rc == 0)
		rc = etcd_json_bytes(k, "key", l->key, l->klen);
	if (rc == 0)
		rc = etcd_json_int(k, "rev", l->rev);
	if (rc == 0)
		rc = etcd_json_int(k, "lease", l->lease);
	return rc;
}

/*
 * The leader key of election name from o: a LeaderKey ("key", "rev", "lease") or a
 * key-value ("key", "create_revision", "lease"), rev naming the revision's field.
 */
static int
leader_parse(struct km_etcd *e, const json_t *o, const char *rev, const void *name, size_t nlen,
	struct km_etcd_leader *out)
{
	const json_t *k = json_object_get(o, "key");

	memset(out, 0, sizeof(*out));
	memcpy(out->name, name, nlen);
	out->nlen = nlen;
	if (!json_is_object(o) || !json_is_string(k) ||
		etcd_b64_decode(json_string_value(k), json_string_length(k), out->key,
			sizeof(out->key), &out->klen) != 0 ||
		etcd_int(o, rev, &out->rev) != 0 || etcd_int(o, "lease", &out->lease) != 0 ||
		out->klen == 0 || out->rev <= 0)
		return etcd_malformed(e);
	return 0;
}

int
km_etcd_campaign(struct km_etcd *e, const void *name, size_t nlen, int64_t lease, const void *value,
	size_t vlen, unsigned int timeout_ms, struct km_etcd_leader *out)
{
	static const char path[] = "/v3/election/campaign";
	json_t *o = json_object(), *reply;
	struct km_etcd_leader r;
	struct km_etcd_kvs *kvs;
	int rc = o != NULL ? name_json(o, name, nlen) : 0;

	if (o != NULL && rc == 0)
		rc = lease != 0 ? etcd_json_int(o, "lease", lease) : -EINVAL;
	if (o != NULL && rc == 0)
		rc = etcd_json_bytes(o, "value", value, vlen);
	rc = etcd_call(e, path, o, rc, timeout_ms, &reply);
	if (rc == -ETIMEDOUT && strstr(e->err, path) != NULL) /* sent, then no reply */
		return etcd_fail(e, rc, "etcd: %s: not leader after %u ms", path,
			timeout_ms != 0 ? timeout_ms : e->timeout_ms);
	if (rc != 0)
		return rc;
	rc = leader_parse(e, json_object_get(reply, "leader"), "rev", name, nlen, &r);
	json_decref(reply);
	if (rc != 0)
		return rc;
	/*
	 * The key may have gone as the campaign won: its lease expired, or a resign on it (an
	 * abandoned campaign's clean-up) raced this one. Leading with no key is no lead.
	 */
	rc = km_etcd_get(e, r.key, r.klen, 0, &kvs);
	if (rc < 0)
		return rc;
	if (rc == 0 || kvs->kv[0].create_rev != r.rev)
		rc = etcd_fail(
			e, -EAGAIN, "etcd: %s: the candidate key vanished, campaign again", path);
	else
		rc = 0;
	km_etcd_kvs_free(kvs);
	if (rc == 0)
		*out = r;
	return rc;
}

int
km_etcd_leader(struct km_etcd *e, const void *name, size_t nlen, struct km_etcd_leader *out,
	struct km_etcd_kvs **value)
{
	static const char path[] = "/v3/election/leader";
	json_t *o = json_object(), *reply, *arr;
	const json_t *kv;
	struct km_etcd_leader r;
	int64_t rev;
	int rc = o != NULL ? name_json(o, name, nlen) : 0;

	rc = etcd_call(e, path, o, rc, 0, &reply);
	if (rc != 0)
		return rc;
	kv = json_object_get(reply, "kv");
	rc = etcd_header_rev(e, reply, &rev);
	if (rc == 0)
		rc = leader_parse(e, kv, "create_revision", name, nlen, &r);
	if (rc == 0 && value != NULL) {
		/* the kv as a one-entry result */
		arr = json_array();
		if (arr == NULL || json_array_append(arr, (json_t *)kv) != 0)
			rc = etcd_fail(e, -ENOMEM, "etcd: %s: out of memory", path);
		else if ((rc = etcd_kvs_build(e, &arr, NULL, 1, 0, rev, value)) > 0)
			rc = 0;
		json_decref(arr);
	}
	json_decref(reply);
	if (rc == 0 && out != NULL)
		*out = r;
	return rc;
}

/* Resign or proclaim: {"leader": l[, "value": value]}. */
static int
leader_call(struct km_etcd *e, const char *path, const struct km_etcd_leader *l, const void *value,
	size_t vlen, int with_value)
{
	json_t *o = json_object();
	int rc = o != NULL ? leader_json(o, l) : 0;

	if (o != NULL && rc == 0 && with_value)
		rc = etcd_json_bytes(o, "value", value, vlen);
	return etcd_call(e, path, o, rc, 0, NULL);
}

int
km_etcd_resign(struct km_etcd *e, const struct km_etcd_leader *l)
{
	return leader_call(e, "/v3/election/resign", l, NULL, 0, 0);
}

int
km_etcd_proclaim(struct km_etcd *e, const struct km_etcd_leader *l, const void *value, size_t vlen)
{
	return leader_call(e, "/v3/election/proclaim", l, value, vlen, 1);
}
