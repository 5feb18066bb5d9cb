module cgotrace.test/sqlite

go 1.21
