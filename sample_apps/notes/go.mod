module corp.test/notes

go 1.21

require vendor.test/sqlkv v1.4.2

replace vendor.test/sqlkv v1.4.2 => ../thirdparty/sqlkv
