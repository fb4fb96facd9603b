// s4go: the static Go client the supervisor tests run (CGO_ENABLED=0, standard library only, so
// it makes its own system calls and resolves names with Go's pure resolver).
//
//	s4go get URL                 print the body of an HTTP GET
//	s4go many N URL              N concurrent GETs; prints "ok N" when every body is the same
//	s4go ftp HOST:PORT FILE OUT  active-mode FTP download (PORT from the listener's address)
//	s4go uring                   try io_uring_setup; print its errno
//	s4go dial HOST:PORT          print the connection's local and remote address, send a line,
//	                             print the answer
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "s4go: "+format+"\n", args...)
	os.Exit(1)
}

func get(url string) ([]byte, error) {
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func many(n int, url string) {
	var wg sync.WaitGroup
	bodies := make([][]byte, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			bodies[i], errs[i] = get(url)
		}(i)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			fail("request %d: %v", i, errs[i])
		}
		if len(bodies[i]) == 0 {
			fail("request %d: empty body", i)
		}
	}
	peers := map[string]bool{}
	for _, b := range bodies {
		peers[strings.SplitN(string(b), "\n", 2)[0]] = true
	}
	fmt.Printf("ok %d distinct-peers %d\n", n, len(peers))
}

// reply reads one FTP reply (multi-line aware) and returns its code and text.
func reply(r *bufio.Reader) (int, string) {
	line, err := r.ReadString('\n')
	if err != nil {
		fail("control connection: %v", err)
	}
	code, _ := strconv.Atoi(line[:3])
	text := line
	if len(line) > 3 && line[3] == '-' {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				fail("control connection: %v", err)
			}
			text += l
			if strings.HasPrefix(l, line[:3]+" ") {
				break
			}
		}
	}
	return code, text
}

func ftp(server, file, out string) {
	c, err := net.DialTimeout("tcp", server, 20*time.Second)
	if err != nil {
		fail("dial %s: %v", server, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	cmd := func(s string, want int) string {
		if s != "" {
			fmt.Fprintf(c, "%s\r\n", s)
		}
		code, text := reply(r)
		if code/100 != want/100 {
			fail("%q: %s", s, strings.TrimSpace(text))
		}
		return text
	}
	cmd("", 220)
	cmd("USER anonymous", 331)
	cmd("PASS s4go@test", 230)
	cmd("TYPE I", 200)
	// Active mode the way FTP programs do it: a listener on port 0, its address in PORT.
	l, err := net.Listen("tcp4", ":0")
	if err != nil {
		fail("listen: %v", err)
	}
	a := l.Addr().(*net.TCPAddr)
	ip := a.IP.To4()
	port := fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", ip[0], ip[1], ip[2], ip[3], a.Port>>8, a.Port&0xff)
	fmt.Println("listener", a.String())
	cmd(port, 200)
	cmd("RETR "+file, 150)
	l.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
	d, err := l.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	fmt.Println("data-peer", d.RemoteAddr().String())
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, d); err != nil {
		fail("data: %v", err)
	}
	d.Close()
	cmd("", 226)
	cmd("QUIT", 221)
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		fail("write %s: %v", out, err)
	}
	fmt.Println("bytes", buf.Len())
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: s4go get URL | many N URL | ftp HOST:PORT FILE OUT")
	}
	switch os.Args[1] {
	case "get":
		body, err := get(os.Args[2])
		if err != nil {
			fail("%v", err)
		}
		os.Stdout.Write(body)
	case "many":
		n, _ := strconv.Atoi(os.Args[2])
		many(n, os.Args[3])
	case "uring":
		var params [120]byte
		_, _, errno := syscall.Syscall(425, 8, uintptr(unsafe.Pointer(&params[0])), 0)
		fmt.Printf("io_uring_setup: %v\n", errno)
	case "dial":
		c, err := net.DialTimeout("tcp", os.Args[2], 20*time.Second)
		if err != nil {
			fail("dial: %v", err)
		}
		fmt.Printf("local %s\nremote %s\n", c.LocalAddr(), c.RemoteAddr())
		fmt.Fprintf(c, "hello from go\n")
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		answer, _ := io.ReadAll(c)
		os.Stdout.Write(answer)
	case "ftp":
		ftp(os.Args[2], os.Args[3], os.Args[4])
	default:
		fail("unknown command %s", os.Args[1])
	}
}
