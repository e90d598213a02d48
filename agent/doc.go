// Package agent runs the node side of Skiff: it checks the kernel, joins
// the cluster with a token that pins the server CA (agent/join), extracts
// the embedded runc, shim and CNI plugins, starts containerd as a child
// process (agent/containerd), imports the embedded and air-gap images,
// writes the pod network configuration once the node has its podCIDR
// (agent/cni), and runs upstream's kubelet in-process against containerd
// over CRI (agent/kubelet).
package agent
