# Independent ndb decoder used to produce ndb-sle15-bci.txt:
#   python3 ndb_decode.py .../ndb-sle15-bci/Packages.db
import struct, zlib
import sys
d=open(sys.argv[1], "rb").read()
snp=struct.unpack_from('<I',d,12)[0]
out=[]
def hdr(b):
    il,dl=struct.unpack_from('>II',b,0)
    data=b[8+il*16:8+il*16+dl]
    t={}
    for i in range(il):
        tag,ty,off,cnt=struct.unpack_from('>IIII',b,8+i*16)
        t[tag]=(ty,off,cnt)
    def s(tag):
        if tag not in t: return '(none)'
        ty,off,cnt=t[tag]; e=data.index(b'\0',off); return data[off:e].decode()
    def i32(tag):
        if tag not in t: return '(none)'
        return str(struct.unpack_from('>I',data,t[tag][1])[0])
    size = str(struct.unpack_from('>Q',data,t[5009][1])[0]) if 5009 in t else i32(1009)
    return '|'.join([s(1000),i32(1003),s(1001),s(1002),s(1022),size,s(1011),i32(1008)])
for i in range(2, snp*256):
    m,idx,off,cnt=struct.unpack_from('<4sIII',d,i*16)
    if idx==0: continue
    blen=struct.unpack_from('<I',d,off*16+12)[0]
    end=off*16+cnt*16
    assert zlib.adler32(d[off*16:end-12])==struct.unpack_from('<I',d,end-12)[0]
    out.append(hdr(d[off*16+16:off*16+16+blen]))
out.sort()

print('\n'.join(out))
