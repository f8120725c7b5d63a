// Command etcd is etcd v3.7 built from the module proxy, so the Kubernetes
// test harness (internal/kubetest) needs no system package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
