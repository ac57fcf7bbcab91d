/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Leases: grant, keepalive once, revoke, time to live.
 */

#include <errno.h>

#include "etcd_private.h"

/* A call whose request is {"ID": id} (plus "TTL" when ttl_s is not 0). */
static int
lease_call(struct km_etcd *e, const char *path, int64_t id, int64_t ttl_s, json_t **reply)
{
	json_t *o = json_object();
	int rc = 0;

	if (o != NULL && id != 0)
		rc = etcd_json_int(o, "ID", id);
	if (o != NULL && rc == 0 && ttl_s != 0)
		rc = etcd_json_int(o, "TTL", ttl_s);
	return etcd_call(e, path, o, rc, 0, reply);
}

int
km_etcd_lease_grant(struct km_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted)
{
	static const char path[] = "/v3/lease/grant";
	json_t *reply;
	int64_t i, t;
	int rc;

	if (ttl_s <= 0)
		return etcd_req_fail(e, NULL, -EINVAL, path);
	rc = lease_call(e, path, 0, ttl_s, &reply);
	if (rc != 0)
		return rc;
	if (etcd_int(reply, "ID", &i) != 0 || etcd_int(reply, "TTL", &t) != 0 || i == 0)
		rc = etcd_malformed(e);
	json_decref(reply);
	if (rc != 0)
		return rc;
	*id = i;
	if (granted != NULL)
		*granted = t;
	return 0;
}

int
km_etcd_lease_keepalive(struct km_etcd *e, int64_t id, int64_t *ttl)
{
	static const char path[] = "/v3/lease/keepalive";
	json_t *reply;
	int64_t t;
	int rc = lease_call(e, path, id, 0, &reply);

	if (rc != 0)
		return rc;
	if (etcd_int(reply, "TTL", &t) != 0)
		rc = etcd_malformed(e);
	json_decref(reply);
	if (rc != 0)
		return rc;
	/* an expired or unknown lease is no error to the gateway: TTL 0, left out */
	if (t <= 0)
		return etcd_fail(e, -ENOENT, "etcd: %s: lease %lld not found", path, (long long)id);
	if (ttl != NULL)
		*ttl = t;
	return 0;
}

int
km_etcd_lease_revoke(struct km_etcd *e, int64_t id)
{
	return lease_call(e, "/v3/lease/revoke", id, 0, NULL);
}

int
km_etcd_lease_ttl(struct km_etcd *e, int64_t id, int64_t *ttl, int64_t *granted)
{
	static const char path[] = "/v3/lease/timetolive";
	json_t *reply;
	int64_t t, g;
	int rc = lease_call(e, path, id, 0, &reply);

	if (rc != 0)
		return rc;
	if (etcd_int(reply, "TTL", &t) != 0 || etcd_int(reply, "grantedTTL", &g) != 0)
		rc = etcd_malformed(e);
	json_decref(reply);
	if (rc != 0)
		return rc;
	/* unknown: TTL -1, no error */
	if (t < 0)
		return etcd_fail(e, -ENOENT, "etcd: %s: lease %lld not found", path, (long long)id);
	*ttl = t;
	if (granted != NULL)
		*granted = g;
	return 0;
}
