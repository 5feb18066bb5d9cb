module cgotrace.test/sitegen

go 1.21
