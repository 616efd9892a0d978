//go:build !linux

package netem

import (
	"errors"
	"os"
)

func openTUN(string) (*os.File, error) { return nil, errors.New("TUN devices need Linux") }
