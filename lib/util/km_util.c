/* SPDX-License-Identifier: BSD-3-Clause */
/* Strict number parsing, one copy for every command line, config key and parameter; the
 * removal of a temporary tree. */

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "km_util.h"

int
km_util_parse_u64n(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t x = 0;
	int over = 0;
	size_t i;

	if (s == NULL || len == 0)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		unsigned int d = (unsigned int)((unsigned char)s[i] - '0');

		if (d > 9)
			return -EINVAL;
		/* Keep scanning after an overflow: a later non-digit is the better message. */
		if (over || x > (UINT64_MAX - d) / 10)
			over = 1;
		else
			x = x * 10 + d;
	}
	if (over || x < min || x > max)
		return -ERANGE;
	*out = x;
	return 0;
}

int
km_util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (s == NULL)
		return -EINVAL;
	return km_util_parse_u64n(s, strlen(s), min, max, out);
}

int
km_util_parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	if (s == NULL ||
		!((s[0] >= '0' && s[0] <= '9') || s[0] == '.' || s[0] == '-' || s[0] == '+'))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0')
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	if (!isfinite(v))
		return -EINVAL;
	if (!(v >= min && v <= max))
		return -ERANGE;
	*out = v;
	return 0;
}

const char *
km_dpdk_runtime_base(void)
{
	const char *dir = getenv("RUNTIME_DIRECTORY");

	if (dir == NULL) {
		if (getuid() == 0)
			dir = "/var/run";
		else if ((dir = getenv("XDG_RUNTIME_DIR")) == NULL)
			dir = "/tmp";
	}
	return dir;
}

int
km_version_opt(int argc, char *const *argv, const char *prog, const char *extra)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--version") != 0)
			continue;
		if (extra != NULL)
			printf("%s %s (%s)\n", prog, KM_VERSION, extra);
		else
			printf("%s %s\n", prog, KM_VERSION);
		return 1;
	}
	return 0;
}

static int
rmtree_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	/* > 0: stops the walk, and never nftw's own -1 */
	return remove(path) == 0 ? 0 : errno;
}

int
km_util_rmtree(const char *dir)
{
	int rc = nftw(dir, rmtree_one, 16, FTW_DEPTH | FTW_PHYS);

	return rc > 0 ? -rc : rc < 0 ? -errno : 0;
}
