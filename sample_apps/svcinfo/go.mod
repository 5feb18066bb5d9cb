module cgotrace.test/svcinfo

go 1.21
