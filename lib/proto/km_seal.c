/* SPDX-License-Identifier: BSD-3-Clause */
/* Request trailers: MACs (client keys) and cookies (address validation), from libsodium. */

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include <km_util.h>

#include "km_proto.h"

_Static_assert(crypto_shorthash_siphashx24_BYTES == KM_MAC_LEN, "MAC is SipHash-2-4-128");
_Static_assert(crypto_shorthash_siphashx24_KEYBYTES == KM_MAC_KEY_LEN, "128-bit MAC key");
_Static_assert(crypto_shorthash_BYTES == KM_COOKIE_LEN, "cookie is SipHash-2-4-64");
_Static_assert(crypto_shorthash_KEYBYTES == KM_MAC_KEY_LEN, "128-bit cookie secret");

void
km_mac(const uint8_t key[KM_MAC_KEY_LEN], const uint8_t *buf, size_t len, uint8_t mac[KM_MAC_LEN])
{
	crypto_shorthash_siphashx24(mac, buf, len, key);
}

int
km_mac_check(const uint8_t key[KM_MAC_KEY_LEN], const uint8_t *buf, const struct km_msg *msg)
{
	uint8_t mac[KM_MAC_LEN];

	if (msg->mac == NULL)
		return 0;
	km_mac(key, buf, (size_t)(msg->mac - buf), mac);
	return crypto_verify_16(mac, msg->mac) == 0;
}

size_t
km_req_seal(uint8_t *buf, size_t len, size_t cap, int has_cookie, uint64_t cookie, uint32_t key_id,
	const uint8_t *key)
{
	uint16_t flags = km_get16(buf + 4) & (uint16_t)~KM_F_TRAILERS;
	size_t need = len + (has_cookie ? KM_COOKIE_LEN : 0) + (key != NULL ? KM_AUTH_LEN : 0);

	if (len < KM_HDR_LEN || need > cap)
		return 0;
	if (has_cookie)
		flags |= KM_F_COOKIE;
	if (key != NULL)
		flags |= KM_F_AUTH;
	km_put16(buf + 4, flags);
	if (has_cookie) {
		km_put64(buf + len, cookie);
		len += KM_COOKIE_LEN;
	}
	if (key != NULL) {
		km_put32(buf + len, key_id);
		len += 4;
		km_mac(key, buf, len, buf + len);
		len += KM_MAC_LEN;
	}
	return len;
}

uint64_t
km_cookie(const uint8_t secret[KM_MAC_KEY_LEN], uint64_t src, uint64_t slot)
{
	uint8_t in[16], out[KM_COOKIE_LEN];

	km_put64(in, src);
	km_put64(in + 8, slot);
	crypto_shorthash(out, in, sizeof(in), secret);
	return km_get64(out);
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
km_secret_parse(const char *hex, uint8_t key[KM_MAC_KEY_LEN])
{
	uint8_t k[KM_MAC_KEY_LEN];
	unsigned int i;

	if (strlen(hex) != 2 * KM_MAC_KEY_LEN)
		return -EINVAL;
	for (i = 0; i < KM_MAC_KEY_LEN; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			sodium_memzero(k, sizeof(k));
			return -EINVAL;
		}
		k[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(key, k, sizeof(k));
	sodium_memzero(k, sizeof(k));
	return 0;
}

int
km_key_parse(const char *spec, uint32_t *id, uint8_t key[KM_MAC_KEY_LEN])
{
	uint8_t k[KM_MAC_KEY_LEN];
	const char *colon, *hex;
	uint64_t v;

	if (spec == NULL || (colon = strchr(spec, ':')) == NULL)
		return -EINVAL;
	if (km_util_parse_u64n(spec, (size_t)(colon - spec), 1, UINT32_MAX, &v) != 0)
		return -EINVAL;
	hex = colon + 1;
	if (km_secret_parse(hex, k) != 0)
		return -EINVAL;
	*id = (uint32_t)v;
	memcpy(key, k, sizeof(k));
	sodium_memzero(k, sizeof(k));
	return 0;
}
