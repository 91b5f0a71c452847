// Package platform names the OS and architecture this process runs on, as "os/arch". It is
// a variable so that tests can pretend to be another platform (a darwin/arm64 submitter).
package platform

import "runtime"

// Current is this process's platform, e.g. "linux/amd64".
var Current = runtime.GOOS + "/" + runtime.GOARCH
