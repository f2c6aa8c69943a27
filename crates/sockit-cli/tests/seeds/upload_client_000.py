# The large-file upload client of the tutorial (seeds/000), unchanged except that the port and
# the file to send come from the command line instead of being written into the file.
import struct
import json
import socket
import os
import sys
client = socket.socket()
client.connect(('127.0.0.1', int(sys.argv[1])))
file_size = os.path.getsize(sys.argv[2])
file_path = sys.argv[2]
data_dic = {
    'file_name': '澳门最大线上赌场开业啦.mp4',
    'file_size': file_size
}
header_json = json.dumps(data_dic)
header_bytes = header_json.encode('utf-8')
# 制作字典的报头
header = struct.pack('i', len(header_bytes))
# 发送报头
client.send(header)
# 发字典数据
client.send(header_bytes)
# 打开文件发送文件数据
with open(file_path,'rb') as f:
    for line in f:
        client.send(line)
