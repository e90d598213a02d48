// Package agent will run the node side of Skiff (containerd, runc, CNI and
// the pod lifecycle). It is a placeholder until the agent issue lands.
package agent
