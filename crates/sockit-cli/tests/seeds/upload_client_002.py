# The video upload client of the tutorial (seeds/002), unchanged except that the port and the
# file to send come from the command line instead of being written into the file.
import socket
import struct
import json
import sys
client = socket.socket()
client.connect(
    ('127.0.0.1', int(sys.argv[1]))
)
# 1.打开一个视频文件,获取视频数据大小
with open(sys.argv[2], 'rb') as f:
    movie_bytes = f.read()
# 关闭文件
# 2.为视频文件组织一个字典,字典内有视频的名称,视频大小
send_dic = {
    'file_name': 'jason真实写真集.mp4',
    'file_size': len(movie_bytes) # 10G
}
# 3.先打包字典,发送headers报头,再发送真实字典数据
json_data = json.dumps(send_dic)
bytes_data = json_data.encode('utf-8')
headers = struct.pack('i', len(bytes_data))
# 发送报头
client.send(headers)
# 发送真实字典数据
client.send(bytes_data)
# 4.接着发送真实视频文件数据
init_data = 0
num = 1
with open(sys.argv[2], 'rb') as f:
    while init_data < len(movie_bytes):
        # 最后一次获取,有多少拿多少
        send_data = f.read(1024)
        print(send_data, num)
        num += 1
        # 每次发送1024数据
        client.send(send_data)
        # 为初始发送数据 + 已发送数据的长度
        init_data += len(send_data)
