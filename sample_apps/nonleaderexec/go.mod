module cgotrace.test/nonleaderexec

go 1.21
