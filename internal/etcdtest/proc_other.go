//go:build !linux

package etcdtest

import "syscall"

// childProcAttr: only Linux can tie the test etcd's life to the test binary's.
func childProcAttr() *syscall.SysProcAttr { return nil }
