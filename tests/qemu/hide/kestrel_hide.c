// SPDX-License-Identifier: GPL-2.0-only
/*
 * TEST-ONLY: a module that hides the way common rootkits do, and does
 * nothing else. For the qemu guest of tests/qemu/modtree.sh only.
 *
 * It takes itself off the module list (/proc/modules, and /proc/kallsyms,
 * which walks that list) and deletes its kobject (/sys/module). Its init is
 * notrace: ftrace would otherwise keep the names of its init functions and
 * list them in /proc/kallsyms under the module's name. Only the kernel's
 * module address tree (mod_tree) still knows it.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/kobject.h>

static int __init notrace hide_init(void)
{
	list_del(&THIS_MODULE->list);
	kobject_del(&THIS_MODULE->mkobj.kobj);
	pr_info("kestrel_hide: hidden\n");
	return 0;
}
module_init(hide_init);
/* No exit: a hidden module cannot be unloaded; the guest powers off. */

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Kestrel test: a module hidden from the list and sysfs");
