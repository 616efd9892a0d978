// Package e2e holds kin's end-to-end tests: they build the real kin binary
// once and run it as people would, as separate processes per user (each
// with a KIN_HOME of its own), talking over loopback only
// (KIN_ICE_INTERFACES=lo) or inside network namespaces the tests create
// (the NAT lab, an emulated WAN). Each file is named by what it tests;
// harness_test.go adapts internal/kintest, the harness bench uses too, to
// *testing.T.
//
//	go test ./e2e/                     # all of them (several minutes on 2 cores)
//	go test ./e2e/ -run TestNATMatrix  # the NAT lab (as root; see docs/natlab.md)
package e2e
