// SPDX-License-Identifier: GPL-2.0
/*
 * Trivial out-of-tree module for the qemu guest harness: proves that a module
 * built by scripts/qemu/build-module against Debian's 6.1 headers loads in the
 * guest (tests/qemu/smoke.sh greps dmesg for the message below).
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

static int __init kestrel_test_mod_init(void)
{
	pr_info("kestrel_test_mod loaded\n");
	return 0;
}

static void __exit kestrel_test_mod_exit(void)
{
	pr_info("kestrel_test_mod unloaded\n");
}

module_init(kestrel_test_mod_init);
module_exit(kestrel_test_mod_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Kestrel qemu harness test module");
