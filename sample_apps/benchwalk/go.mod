module cgotrace.test/benchwalk

go 1.21
