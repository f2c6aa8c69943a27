# The large-file upload server of the tutorial (seeds/000), unchanged except that the port and
# the directory to write into come from the command line, and it serves one upload then exits
# (so a benchmark can time it).
import socket
import json
import struct
import os
import sys
server = socket.socket()
server.bind(('127.0.0.1', int(sys.argv[1])))
server.listen(5)
os.chdir(sys.argv[2])
conn, addr = server.accept()
header = conn.recv(4)
dic_len = struct.unpack('i', header)[0]
real_dic = json.loads(conn.recv(dic_len).decode('utf-8'))
file_name = real_dic.get('file_name')
file_size = real_dic.get('file_size')
recv_size = 0
with open(file_name, 'wb') as f:
    while recv_size < file_size:
        recv_data = conn.recv(1024)
        f.write(recv_data)
        recv_size += len(recv_data)
