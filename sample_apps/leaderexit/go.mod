module cgotrace.test/leaderexit

go 1.21
