/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Keys and values: put, get (one key or a prefix), delete, transactions, compaction.
 */

#include <errno.h>
#include <stdlib.h>

#include "etcd_private.h"

/* The body of a put, alone or in a transaction. */
static int
put_json(json_t *o, const void *key, size_t klen, const void *value, size_t vlen, int64_t lease)
{
	int rc = etcd_json_key(o, key, klen, 0);

	if (rc == 0)
		rc = etcd_json_bytes(o, "value", value, vlen);
	if (rc == 0 && lease != 0)
		rc = etcd_json_int(o, "lease", lease);
	return rc;
}

int
km_etcd_put(struct km_etcd *e, const void *key, size_t klen, const void *value, size_t vlen,
	int64_t lease, int64_t *rev)
{
	static const char path[] = "/v3/kv/put";
	json_t *o = json_object(), *reply;
	int64_t r;
	int rc = o != NULL ? put_json(o, key, klen, value, vlen, lease) : -ENOMEM;

	rc = etcd_call(e, path, o, rc, 0, &reply);
	if (rc != 0)
		return rc;
	rc = etcd_header_rev(e, reply, &r);
	json_decref(reply);
	if (rc == 0 && rev != NULL)
		*rev = r;
	return rc;
}

int
km_etcd_get(struct km_etcd *e, const void *key, size_t klen, unsigned int flags,
	struct km_etcd_kvs **out)
{
	static const char path[] = "/v3/kv/range";
	json_t *o = json_object(), *reply, *kvs;
	int64_t r;
	int rc = o != NULL ? etcd_json_key(o, key, klen, flags) : -ENOMEM;

	rc = etcd_call(e, path, o, rc, 0, &reply);
	if (rc != 0)
		return rc;
	rc = etcd_header_rev(e, reply, &r);
	if (rc == 0) {
		kvs = json_object_get(reply, "kvs");
		rc = etcd_kvs_build(e, &kvs, NULL, 1, 0, r, out);
	}
	json_decref(reply);
	return rc;
}

int
km_etcd_delete(struct km_etcd *e, const void *key, size_t klen, unsigned int flags, int64_t *rev)
{
	static const char path[] = "/v3/kv/deleterange";
	json_t *o = json_object(), *reply;
	int64_t r, n;
	int rc = o != NULL ? etcd_json_key(o, key, klen, flags) : -ENOMEM;

	rc = etcd_call(e, path, o, rc, 0, &reply);
	if (rc != 0)
		return rc;
	rc = etcd_header_rev(e, reply, &r);
	if (rc == 0 && (etcd_int(reply, "deleted", &n) != 0 || n < 0 || n > INT32_MAX))
		rc = etcd_malformed(e);
	json_decref(reply);
	if (rc != 0)
		return rc;
	if (rev != NULL)
		*rev = r;
	return (int)n;
}

static const char *const target_names[] = {
	[KM_ETCD_VERSION] = "VERSION",
	[KM_ETCD_CREATE] = "CREATE",
	[KM_ETCD_MOD] = "MOD",
	[KM_ETCD_VALUE] = "VALUE",
	[KM_ETCD_LEASE] = "LEASE",
};
/* the field that carries what a target is compared with */
static const char *const target_fields[] = {
	[KM_ETCD_VERSION] = "version",
	[KM_ETCD_CREATE] = "create_revision",
	[KM_ETCD_MOD] = "mod_revision",
	[KM_ETCD_VALUE] = "value",
	[KM_ETCD_LEASE] = "lease",
};
static const char *const result_names[] = {
	[KM_ETCD_EQUAL] = "EQUAL",
	[KM_ETCD_NOT_EQUAL] = "NOT_EQUAL",
	[KM_ETCD_GREATER] = "GREATER",
	[KM_ETCD_LESS] = "LESS",
};

static int
cmp_json(json_t *arr, const struct km_etcd_cmp *c)
{
	json_t *o = json_object();
	int rc;

	if (o == NULL || json_array_append_new(arr, o) != 0)
		return -ENOMEM;
	if ((unsigned int)c->target > KM_ETCD_LEASE || (unsigned int)c->result > KM_ETCD_LESS)
		return -EINVAL;
	rc = etcd_json_key(o, c->key, c->klen, 0);
	if (rc != 0)
		return rc;
	if (json_object_set_new(o, "target", json_string(target_names[c->target])) != 0 ||
		json_object_set_new(o, "result", json_string(result_names[c->result])) != 0)
		return -ENOMEM;
	if (c->target == KM_ETCD_VALUE)
		return etcd_json_bytes(o, "value", c->value, c->vlen);
	return etcd_json_int(o, target_fields[c->target], c->num);
}

static int
op_json(json_t *arr, const struct km_etcd_op *op)
{
	static const char *const names[] = {
		[KM_ETCD_OP_PUT] = "request_put",
		[KM_ETCD_OP_DELETE] = "request_delete_range",
		[KM_ETCD_OP_GET] = "request_range",
	};
	json_t *o = json_object(), *req = json_object();

	if (o == NULL || req == NULL) {
		json_decref(o);
		json_decref(req);
		return -ENOMEM;
	}
	if (json_array_append_new(arr, o) != 0) { /* o is freed */
		json_decref(req);
		return -ENOMEM;
	}
	if ((unsigned int)op->type > KM_ETCD_OP_GET) {
		json_decref(req);
		return -EINVAL;
	}
	if (json_object_set_new(o, names[op->type], req) != 0)
		return -ENOMEM;
	if (op->type == KM_ETCD_OP_PUT)
		return op->flags != 0
			       ? -EINVAL
			       : put_json(req, op->key, op->klen, op->value, op->vlen, op->lease);
	return etcd_json_key(req, op->key, op->klen, op->flags);
}

static int
txn_json(json_t *o, const struct km_etcd_cmp *cmp, size_t ncmp, const struct km_etcd_op *success,
	size_t nsuccess, const struct km_etcd_op *failure, size_t nfailure)
{
	json_t *c = json_array(), *s = json_array(), *f = json_array();
	size_t i;
	int rc = 0;

	/* all three set (each steals its array, even on failure), then checked */
	if ((json_object_set_new(o, "compare", c) | json_object_set_new(o, "success", s) |
		    json_object_set_new(o, "failure", f)) != 0)
		return -ENOMEM;
	if ((ncmp > 0 && cmp == NULL) || (nsuccess > 0 && success == NULL) ||
		(nfailure > 0 && failure == NULL))
		return -EINVAL;
	for (i = 0; rc == 0 && i < ncmp; i++)
		rc = cmp_json(c, &cmp[i]);
	for (i = 0; rc == 0 && i < nsuccess; i++)
		rc = op_json(s, &success[i]);
	for (i = 0; rc == 0 && i < nfailure; i++)
		rc = op_json(f, &failure[i]);
	return rc;
}

/* The keys read by the GET ops of the branch that ran. */
static int
txn_gets(struct km_etcd *e, const json_t *reply, const struct km_etcd_op *ops, size_t nops,
	int64_t rev, struct km_etcd_kvs **gets)
{
	const json_t *resp = json_object_get(reply, "responses");
	json_t **arr = NULL;
	unsigned int *idx = NULL;
	size_t i, n = 0;
	int rc;

	if (resp != NULL ? !json_is_array(resp) || json_array_size(resp) != nops : nops != 0)
		return etcd_malformed(e);
	if (nops > 0) {
		arr = malloc(nops * sizeof(*arr));
		idx = malloc(nops * sizeof(*idx));
		if (arr == NULL || idx == NULL) {
			rc = etcd_fail(e, -ENOMEM, "etcd: %s: out of memory", e->path);
			goto out;
		}
	}
	for (i = 0; i < nops; i++) {
		const json_t *r;

		if (ops[i].type != KM_ETCD_OP_GET)
			continue;
		r = json_object_get(json_array_get(resp, i), "response_range");
		if (!json_is_object(r)) {
			rc = etcd_malformed(e);
			goto out;
		}
		arr[n] = json_object_get(r, "kvs");
		idx[n++] = (unsigned int)i;
	}
	rc = etcd_kvs_build(e, arr, idx, n, 0, rev, gets);
out:
	free(arr);
	free(idx);
	return rc;
}

int
km_etcd_txn(struct km_etcd *e, const struct km_etcd_cmp *cmp, size_t ncmp,
	const struct km_etcd_op *success, size_t nsuccess, const struct km_etcd_op *failure,
	size_t nfailure, int64_t *rev, struct km_etcd_kvs **gets)
{
	static const char path[] = "/v3/kv/txn";
	json_t *o = json_object(), *reply;
	const json_t *ok;
	int64_t r;
	int rc = o != NULL ? txn_json(o, cmp, ncmp, success, nsuccess, failure, nfailure) : -ENOMEM;
	int succeeded;

	rc = etcd_call(e, path, o, rc, 0, &reply);
	if (rc != 0)
		return rc;
	rc = etcd_header_rev(e, reply, &r);
	ok = json_object_get(reply, "succeeded");
	if (rc == 0 && ok != NULL && !json_is_boolean(ok))
		rc = etcd_malformed(e);
	succeeded = json_is_true(ok);
	if (rc == 0 && gets != NULL)
		rc = succeeded ? txn_gets(e, reply, success, nsuccess, r, gets)
			       : txn_gets(e, reply, failure, nfailure, r, gets);
	json_decref(reply);
	if (rc < 0)
		return rc;
	if (rev != NULL)
		*rev = r;
	return succeeded;
}

int
km_etcd_compact(struct km_etcd *e, int64_t rev)
{
	static const char path[] = "/v3/kv/compaction";
	json_t *o = json_object();
	int rc = o != NULL ? etcd_json_int(o, "revision", rev) : -ENOMEM;

	return etcd_call(e, path, o, rc, 0, NULL);
}
