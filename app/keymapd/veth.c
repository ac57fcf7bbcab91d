/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * [net] veth: the port for kernel clients on the same host without a NIC (docs/operations.md
 * 2.3.1). When an EAL --vdev puts net_af_packet or net_af_xdp on NAMEp, keymapd creates,
 * before EAL starts, the veth pair NAME (the kernel's end: the clients' route to keymapd)
 * and NAMEp (keymapd's end), both up, unless NAME exists already; it removes the pair at
 * exit when it created it. Other ports (a NIC, a tap): nothing is done.
 * When the pair cannot be created (no veth support in the kernel, no CAP_NET_ADMIN), an
 * EAL --vdev of net_af_packet or net_af_xdp on NAMEp becomes net_tap0,iface=NAME: the
 * kernel's end has the same name either way, so what the operator configures on it (its
 * address) does not change.
 *
 * Plain rtnetlink (RTM_NEWLINK with a veth peer, RTM_DELLINK) and SIOCSIFFLAGS; main
 * lcore only, before EAL init and after the port is closed.
 */

#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keymapd.h"

#define NL_BUF 1024

static struct {
	char name[IFNAMSIZ];
	int created; /* this run made the pair: removed at exit */
	char tap_vdev[64 + IFNAMSIZ];
} vt;

/* Append attribute type (len bytes of data) at the end of the message in buf. */
static struct rtattr *
nl_attr(struct nlmsghdr *n, size_t cap, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
	size_t need = NLMSG_ALIGN(n->nlmsg_len) + RTA_SPACE(len);

	if (need > cap)
		return NULL;
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len != 0)
		memcpy(RTA_DATA(a), data, len);
	n->nlmsg_len = (uint32_t)need;
	return a;
}

/* Close a nested attribute opened at a: its length runs to the end of the message. */
static void
nl_nest_end(struct nlmsghdr *n, struct rtattr *a)
{
	a->rta_len = (unsigned short)((char *)n + n->nlmsg_len - (char *)a);
}

/* Send one request and read its acknowledgement. @return 0 or -errno. */
static int
nl_talk(struct nlmsghdr *n)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	char buf[NL_BUF];
	struct nlmsghdr *r;
	struct nlmsgerr *e;
	ssize_t len;
	int fd, rc = -EPROTO;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	n->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	n->nlmsg_seq = 1;
	if (sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		goto out;
	}
	len = recv(fd, buf, sizeof(buf), 0);
	if (len < 0) {
		rc = -errno;
		goto out;
	}
	for (r = (struct nlmsghdr *)buf; NLMSG_OK(r, (unsigned int)len); r = NLMSG_NEXT(r, len)) {
		if (r->nlmsg_type != NLMSG_ERROR)
			continue;
		e = NLMSG_DATA(r);
		rc = e->error; /* 0: the acknowledgement */
		break;
	}
out:
	close(fd);
	return rc;
}

/* Create the pair name / peer. @return 0 or -errno. */
static int
veth_create(const char *name, const char *peer)
{
	union {
		struct nlmsghdr n;
		char buf[NL_BUF];
	} m;
	struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
	struct rtattr *info, *data, *pa;

	memset(&m, 0, sizeof(m));
	m.n.nlmsg_len = NLMSG_LENGTH(sizeof(ifi));
	m.n.nlmsg_type = RTM_NEWLINK;
	m.n.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	memcpy(NLMSG_DATA(&m.n), &ifi, sizeof(ifi));
	if (nl_attr(&m.n, sizeof(m), IFLA_IFNAME, name, strlen(name) + 1) == NULL)
		return -ENOSPC;
	info = nl_attr(&m.n, sizeof(m), IFLA_LINKINFO, NULL, 0);
	if (info == NULL || nl_attr(&m.n, sizeof(m), IFLA_INFO_KIND, "veth", 5) == NULL)
		return -ENOSPC;
	data = nl_attr(&m.n, sizeof(m), IFLA_INFO_DATA, NULL, 0);
	if (data == NULL)
		return -ENOSPC;
	/* The peer: an ifinfomsg, then its attributes. */
	pa = nl_attr(&m.n, sizeof(m), VETH_INFO_PEER, &ifi, sizeof(ifi));
	if (pa == NULL || nl_attr(&m.n, sizeof(m), IFLA_IFNAME, peer, strlen(peer) + 1) == NULL)
		return -ENOSPC;
	nl_nest_end(&m.n, pa);
	nl_nest_end(&m.n, data);
	nl_nest_end(&m.n, info);
	return nl_talk(&m.n);
}

static int
veth_delete(const char *name)
{
	union {
		struct nlmsghdr n;
		char buf[NL_BUF];
	} m;
	struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};

	memset(&m, 0, sizeof(m));
	m.n.nlmsg_len = NLMSG_LENGTH(sizeof(ifi));
	m.n.nlmsg_type = RTM_DELLINK;
	memcpy(NLMSG_DATA(&m.n), &ifi, sizeof(ifi));
	if (nl_attr(&m.n, sizeof(m), IFLA_IFNAME, name, strlen(name) + 1) == NULL)
		return -ENOSPC;
	return nl_talk(&m.n);
}

static int
link_up(const char *name)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = 0;

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		rc = -errno;
	} else if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			rc = -errno;
	}
	close(fd);
	return rc;
}

/* The --vdev value in eal_argv that is net_af_packet or net_af_xdp on iface peer. */
static int
vdev_on(int eal_argc, char **eal_argv, const char *peer)
{
	char want[8 + IFNAMSIZ];
	const char *v;
	int i;

	snprintf(want, sizeof(want), "iface=%s", peer);
	for (i = 1; i < eal_argc; i++) {
		if (strcmp(eal_argv[i], "--vdev") == 0 && i + 1 < eal_argc)
			v = eal_argv[++i];
		else if (strncmp(eal_argv[i], "--vdev=", 7) == 0)
			v = eal_argv[i] + 7;
		else
			continue;
		if ((strncmp(v, "net_af_packet", 13) == 0 || strncmp(v, "net_af_xdp", 10) == 0) &&
			strstr(v, want) != NULL)
			return i;
	}
	return -1;
}

int
km_veth_setup(const char *name, int eal_argc, char **eal_argv)
{
	char peer[IFNAMSIZ + 1];
	int rc, at;

	if (name[0] == '\0')
		return 0;
	if (strlen(name) + 1 >= IFNAMSIZ) {
		KM_LOG(ERR, "[net] veth %s: at most %d characters", name, IFNAMSIZ - 2);
		return -1;
	}
	snprintf(peer, sizeof(peer), "%sp", name);
	/* Only for a port on keymapd's end (a NIC, a tap: nothing to do). */
	at = vdev_on(eal_argc, eal_argv, peer);
	if (at < 0)
		return 0;
	if (if_nametoindex(name) != 0) {
		if (if_nametoindex(peer) == 0) {
			KM_LOG(ERR,
				"[net] veth %s: an interface of that name exists without its peer "
				"%s "
				"(remove it, or choose another name)",
				name, peer);
			return -1;
		}
		KM_LOG(INFO, "[net] veth %s: the pair %s / %s exists: used as it is", name, name,
			peer);
		rc = link_up(peer);
		if (rc == 0)
			rc = link_up(name);
		if (rc < 0)
			KM_LOG(WARNING, "[net] veth %s: cannot set it up: %s", name, strerror(-rc));
		return 0;
	}
	rc = veth_create(name, peer);
	if (rc == 0) {
		snprintf(vt.name, sizeof(vt.name), "%s", name);
		vt.created = 1;
		rc = link_up(peer);
		if (rc == 0)
			rc = link_up(name);
		if (rc < 0) {
			KM_LOG(ERR, "[net] veth %s: cannot set the pair up: %s", name,
				strerror(-rc));
			km_veth_cleanup();
			return -1;
		}
		KM_LOG(INFO, "[net] veth: created %s (the kernel's end) and %s (keymapd's)", name,
			peer);
		return 0;
	}
	/* The fallback: a tap of the kernel's end's name. */
	snprintf(vt.tap_vdev, sizeof(vt.tap_vdev), "%snet_tap0,iface=%s",
		strncmp(eal_argv[at], "--vdev=", 7) == 0 ? "--vdev=" : "", name);
	KM_LOG(WARNING,
		"[net] veth %s: cannot create the pair (%s): net_tap %s instead of %s (slower: "
		"docs/operations.md 2.3.1)",
		name, strerror(-rc), name, eal_argv[at]);
	eal_argv[at] = vt.tap_vdev;
	return 0;
}

void
km_veth_cleanup(void)
{
	int rc;

	if (!vt.created)
		return;
	vt.created = 0;
	rc = veth_delete(vt.name);
	if (rc < 0 && rc != -ENODEV)
		KM_LOG(WARNING, "[net] veth %s: cannot remove it: %s", vt.name, strerror(-rc));
}
