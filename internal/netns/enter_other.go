//go:build !linux

package netns

import "errors"

func enter(string) (func() error, error) { return nil, errors.New("network namespaces need Linux") }
