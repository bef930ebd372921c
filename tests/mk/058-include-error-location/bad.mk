MKSHELL=rc
X=1

# comment
this line is wrong
