# The UDP client of the tutorial (seeds/001), unchanged except for the address, which comes
# from the command line instead of being written into the file.
import socket
import sys

port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

for data in [b'Michael', b'Tracy', b'Sarah']:

    # 发送数据:

    s.sendto(data, ('127.0.0.1', port))

    # 接收数据:

    print(s.recv(1024).decode('utf-8'))

s.close()
