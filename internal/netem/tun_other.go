//go:build !linux

package netem

import (
	"errors"
	"os"
)

func openTUN(string) (*os.File, error) { return nil, errors.New("TUN devices need Linux") }

func enter(string) (func() error, error) { return nil, errors.New("network namespaces need Linux") }
