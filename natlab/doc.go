// Package natlab holds the NAT lab: a test that builds home networks behind NAT routers in
// network namespaces and runs real gridnode processes in them (see nat_linux_test.go).
package natlab
