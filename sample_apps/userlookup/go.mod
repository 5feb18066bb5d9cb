module cgotrace.test/userlookup

go 1.21
