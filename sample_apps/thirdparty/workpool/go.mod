module vendor.test/workpool

go 1.21
