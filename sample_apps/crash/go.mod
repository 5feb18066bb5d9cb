module cgotrace.test/crash

go 1.21
