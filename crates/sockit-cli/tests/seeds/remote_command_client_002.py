# The remote-command client of the tutorial (seeds/002), unchanged except that the port comes
# from the command line instead of being written into the file.
from socket import *
import json
import struct
import sys
client = socket(AF_INET, SOCK_STREAM)
client.connect(('127.0.0.1', int(sys.argv[1])))
while True:
    cmd = input('please enter your cmd you want>>>')
    if len(cmd) == 0: continue
    client.send(cmd.encode('utf8'))
    # 1. 先收4个字节,这4个字节中包含报头的长度
    header_len = struct.unpack('i', client.recv(4))[0]
    # 2. 再接收报头
    header_bytes = client.recv(header_len)
    # 3. 从包头中解析出想要的东西
    header_json = header_bytes.decode('utf8')
    header_dict = json.loads(header_json)
    total_size = header_dict['total_size']
    # 4. 再收真实的数据
    recv_size = 0
    res = b''
    while recv_size < total_size:
        data = client.recv(1024)
        res += data
        recv_size += len(data)
    print(res.decode('utf8'))
client.close()
