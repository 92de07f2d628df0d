# The behaviours of tests/qemu/backends-guest.sh, run by busybox sh in the
# guest as `sh backends-behaviours.sh TAG`: one of every event kind a
# syscall hook makes, every name carrying TAG. Not meant for the host.
t=$1 d=/tmp/$1
mkdir -p "$d"
# exec (59) and a failed exec (59, res < 0), execveat (59)
/bin/busybox true "$t-exec"
chmod 0644 "$d/noexec" 2>/dev/null || : >"$d/noexec"
"$d/noexec" "$t-noexec" 2>/dev/null
kestrel-sys "$t" execveat
# file creation (602): open(O_CREAT), openat2, mknodat, link
: >"$d/created"
kestrel-sys "$t" openat2
kestrel-sys "$t" mknod
# rename (82), link/symlink (86), unlink (605), rmdir (606)
mv "$d/created" "$d/renamed"
ln "$d/renamed" "$d/hardlink"
ln -s "$d/renamed" "$d/symlink"
rm "$d/hardlink"
mkdir "$d/dir" && rmdir "$d/dir"
# chmod with setuid (90), fchmod keeps the old mode
: >"$d/suid" && chmod 4755 "$d/suid"
kestrel-sys "$t" fchmod
# watched paths: owner change (92), open for writing (608/609), truncate
chown 0:0 /etc/passwd
echo "# $t" >>/etc/passwd
truncate -s 100 /etc/passwd
# connect (42) refused and UDP, bind (49), accept (43)
nc 127.0.0.1 1 </dev/null 2>/dev/null
kestrel-sys "$t" udp
kestrel-sys "$t" accept
# DNS answer read with recvfrom (601)
kestrel-sys "$t" dns
# ptrace (101), setsid (112), memfd (356), mprotect to exec (10), bpf (321)
kestrel-sys "$t" ptrace
setsid /bin/busybox true "$t-setsid"
kestrel-sys "$t" memfd
kestrel-sys "$t" mprotect
kestrel-sys "$t" bpf
# mount (165), unshare (272), setns (308)
mount -t tmpfs "$t" /mnt/kbk && umount /mnt/kbk
unshare -u /bin/busybox true "$t-unshare"
nsenter -t 1 -u /bin/busybox true "$t-setns"
# module load from /tmp (603)
insmod /tmp/kestrel_test_mod.ko && rmmod kestrel_test_mod
