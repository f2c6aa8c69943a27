# The UDP socketserver of the tutorial (seeds/000), unchanged except that the port comes from
# the command line and the per-datagram print is gone (it would measure the terminal).
import socketserver
import sys
class MyUdpServer(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data.upper(), self.client_address)
if __name__ == '__main__':
    server = socketserver.ThreadingUDPServer(('127.0.0.1', int(sys.argv[1])), MyUdpServer)
    server.serve_forever()
