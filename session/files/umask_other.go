//go:build !unix

package files

import "io/fs"

// umask: systems without one get what a typical Unix one gives.
func umask() fs.FileMode { return 0o022 }
