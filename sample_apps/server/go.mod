module cgotrace.test/server

go 1.21
