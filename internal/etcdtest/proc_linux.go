package etcdtest

import "syscall"

// childProcAttr makes the kernel kill the test etcd when the test binary dies without stopping
// it (a timeout, a crash), so that no etcd outlives the tests.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
