//go:build !linux && !darwin && !windows

package agent

func (s Service) install() error   { return ErrNoServiceManager }
func (s Service) uninstall() error { return ErrNoServiceManager }
