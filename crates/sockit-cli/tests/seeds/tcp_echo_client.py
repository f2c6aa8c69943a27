#!/usr/bin/python
# -*- coding: utf-8 -*-
# The concurrent-server client of the tutorial (seeds/003), unchanged except for the address,
# which comes from the command line instead of being written into the file.
import socket,json,struct
import sys

ip_port=('127.0.0.1',int(sys.argv[1]))
back_log=5
buffer_size=1024
client=socket.socket(socket.AF_INET,socket.SOCK_STREAM)

client.connect_ex(ip_port)

while True:
    cmd=input('>>: ')
    if not cmd:continue #防止输入空值
    if cmd == 'quit':break
    client.send(bytes(cmd,encoding='utf-8')) #将命令编码后转为字节发送

    data=client.recv(buffer_size)
    print('收到服务端发来的消息',data.decode('utf-8'))

client.close()
