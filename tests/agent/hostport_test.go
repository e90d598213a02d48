package agent

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/skiff-sh/skiff/tests/testserver"
)

// TestHostPort: a pod's hostPort answers on the node's address and on
// 127.0.0.1 (the agent's nftables rules, no host nft program), and stops
// answering once the pod is gone.
func TestHostPort(t *testing.T) {
	setup(t)
	ns := shared.Namespace(t)
	const hostPort = 18123
	demoPod(t, ns, "hostport", func(p *v1.Pod) {
		p.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 8080, HostPort: hostPort}}
	})
	p := waitPod(t, ns, "hostport", 90*time.Second, "running", running)
	for _, host := range []string{p.Status.HostIP, "127.0.0.1"} {
		body := httpGet(t, fmt.Sprintf("http://%s/", net.JoinHostPort(host, fmt.Sprint(hostPort))))
		testserver.MustContain(t, body, "pod: hostport", "ip: "+p.Status.PodIP)
	}
	kubectl(t, "-n", ns, "delete", "pod", "hostport", "--wait=true")
	// With the mapping gone, the port is the host's own again: a listener
	// of this test's answers there, not the deleted pod's address.
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", hostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("host"))
			c.Close()
		}
	}()
	addr := net.JoinHostPort(p.Status.HostIP, fmt.Sprint(hostPort))
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			b := make([]byte, 4)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := io.ReadFull(c, b)
			c.Close()
			if string(b[:n]) == "host" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not reach the host 60 s after the pod was deleted: the mapping stayed", addr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
