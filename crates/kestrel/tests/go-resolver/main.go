// Resolves each argument with Go's own resolver (GODEBUG=netdns=go), which
// reads its answers with read(2) from a connected UDP socket.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	for _, name := range os.Args[1:] {
		addrs, err := net.LookupHost(name)
		fmt.Println(name, addrs, err)
	}
}
