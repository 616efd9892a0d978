package agent

func (s Service) install() error {
	return s.run("schtasks", "/Create", "/F", "/SC", "ONLOGON", "/TN", "kin", "/TR", quoteArgs(append([]string{s.Binary}, s.Args...)...))
}

func (s Service) uninstall() error {
	return s.run("schtasks", "/Delete", "/F", "/TN", "kin")
}
