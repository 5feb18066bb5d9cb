module cgotrace.test/callback

go 1.21
