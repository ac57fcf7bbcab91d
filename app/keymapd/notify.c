/* SPDX-License-Identifier: BSD-3-Clause */

/* systemd's service notifications (Type=notify, WatchdogSec=): control.h. */

#include <stdint.h>

#include <systemd/sd-daemon.h>

#include <rte_cycles.h>

#include "control.h"
#include "keymapd.h"

static struct {
	int checked;    /* sd_watchdog_enabled asked */
	uint64_t every; /* TSC cycles between WATCHDOG=1, 0 = no watchdog */
	uint64_t last;  /* TSC of the last one */
} wd;

void
km_notify(const char *state)
{
	int rc = sd_notify(0, state);

	if (rc < 0)
		KM_LOG(WARNING, "systemd notification %s: %s", state, strerror(-rc));
}

void
km_notify_watchdog(void)
{
	uint64_t usec, now;

	if (!wd.checked) {
		wd.checked = 1;
		if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
			wd.every = usec / 2 * rte_get_timer_hz() / 1000000;
			KM_LOG(NOTICE, "systemd watchdog: every %" PRIu64 " ms", usec / 2000);
		}
	}
	if (wd.every == 0)
		return;
	now = rte_get_timer_cycles();
	if (now - wd.last < wd.every)
		return;
	wd.last = now;
	km_notify("WATCHDOG=1");
}
