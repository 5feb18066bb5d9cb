module vendor.test/sqlkv

go 1.21
