/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A count of the calls that can change a directory's path (rename, rmdir,
 * mount, move_mount, umount, pivot_root, unshare): the watched-path check
 * keeps verdicts per directory (lib/watch.h) that hold only for one value
 * of it. The programs of those calls bump it, whoever makes them, the
 * agent included, before anything else they do.
 */
#ifndef KESTREL_LIB_MOVES_H
#define KESTREL_LIB_MOVES_H

#include "base.h"

volatile __u32 watch_gen = 0;

static __always_inline void watch_paths_changed(long ret)
{
	if (ret == 0)
		__sync_fetch_and_add(&watch_gen, 1);
}

#endif /* KESTREL_LIB_MOVES_H */
