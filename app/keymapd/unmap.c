/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * munmap() as the DPDK drivers keymapd loads see it: called from the EAL interrupt thread,
 * it first waits for a grace period of the workers.
 *
 * Why: DPDK 22.11's memif driver (net_memif) handles a peer that leaves on the interrupt
 * thread. memif_disconnect() clears the port's CONNECTED flag and at once unmaps the
 * shared regions the rings live in, while a worker may be inside rte_eth_rx_burst() or
 * rte_eth_tx_burst() on them (it read the flag when its burst began): the worker faults
 * (seen here when a keymap-bench run ends, the more often the busier the machine, as a
 * preempted burst stretches the window). Every worker reports a quiescent state at the top
 * of each loop iteration and is offline while it sleeps (worker.c), so once
 * synchronize_rcu() returns no burst that began before the flag was cleared is still
 * running, and every later one sees it cleared (the grace period's barriers order the
 * flag's store before the workers' next load), so it touches no ring. Other threads' calls
 * are not delayed, and the interrupt thread is not an RCU reader (no deadlock).
 *
 * keymapd exports this definition (meson.build: --export-dynamic-symbol): it binds before
 * libc's for the drivers EAL loads with dlopen().
 */

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <rte_interrupts.h>

#include <urcu-qsbr.h>

int
munmap(void *addr, size_t len)
{
	if (rte_thread_is_intr())
		synchronize_rcu();
	return (int)syscall(SYS_munmap, addr, len);
}
