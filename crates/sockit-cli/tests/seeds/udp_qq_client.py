# The "simple QQ" UDP chat client of the tutorial (seeds/000), unchanged except that the port
# comes from the command line instead of being written into the file.
import socket
import sys
client = socket.socket(type=socket.SOCK_DGRAM)
server_addr = ('127.0.0.1', int(sys.argv[1]))
while True:
    info = input('>>>:')
    info = ('来自客户端1的消息:%s'%info).encode('utf-8') # 改中文备注即可
    client.sendto(info, server_addr)
    msg, addr = client.recvfrom(1024)
    print(msg.decode('utf-8'), addr)
client.close()
