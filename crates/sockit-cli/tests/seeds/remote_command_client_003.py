#!/usr/bin/python
# -*- coding: utf-8 -*-
# The remote-command client of the tutorial (seeds/003), unchanged except for the address,
# which comes from the command line instead of being written into the file.
"""
基于TCP实现远程执行命令,发送数据长度信息解决粘包问题,这是客户端
"""
import socket,json,struct
import sys

ip_port=('127.0.0.1',int(sys.argv[1]))
back_log=5
buffer_size=1024
client=socket.socket(socket.AF_INET,socket.SOCK_STREAM)

#s.connect()     主动初始化TCP服务器连接
#s.connect_ex()  connect()函数的扩展版本,出错时返回出错码,而不是抛出异常
client.connect_ex(ip_port)

while True:
    cmd=input('>>: ')
    if not cmd:continue #防止输入空值
    if cmd == 'quit':break
    client.send(bytes(cmd,encoding='utf-8')) #将命令编码后转为字节发送

    head=client.recv(4) #接收长度为4个字节的报头长度信息
    head_json_len=struct.unpack('i',head)[0] #将报头长度信息解包,得到报头长度
    head_json=json.loads(client.recv(head_json_len).decode('utf-8'))
    #利用报头长度取出报头并解码、反序列化,得到报头
    data_len=head_json['data_size'] #从报头里取出数据长度

    recv_size=0
    recv_data=b''
    while recv_size < data_len:
        recv_data += client.recv(1024) #一次跨1024字节收数据
        recv_size += len(recv_data) #计算已得到数据长度

    #print(recv_data.decode('utf-8'))
    print(recv_data.decode('gbk')) #windows默认gbk编码
